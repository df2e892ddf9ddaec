"""The marts in the warehouse: merging the engines' per-file contributions (merge.py), the daily
sums (daily.py), the coupons derived from the customer mart (coupons.py) and the marts'
snapshots in the lake (snapshots.py). The contributions themselves are computed by the shared
SQL in retail_etl/sql, once for both engines."""

-- sales_team_data_mart contributions: what each source file adds to each store, sales person
-- and month. Input: valid_rows (as for customers_data_mart.sql). The incentive (rank 1 per
-- store and month) is applied after merging, in marts/merge.py, because it depends on the
-- whole month; the name comes from the warehouse's sales_team table there. The month is
-- labelled after grouping: once per group, not once per row.
WITH sales AS (
    SELECT ledger_id, store_id, sales_person_id, {{ month_start("sales_date") }} AS month_start,
           total_cost
    FROM valid_rows
),

per_file AS (
    SELECT ledger_id, store_id, sales_person_id, month_start,
           SUM(total_cost) AS total_sales, COUNT(*) AS sales_rows
    FROM sales
    GROUP BY ledger_id, store_id, sales_person_id, month_start
)

SELECT
    CAST(ledger_id AS BIGINT) AS ledger_id,
    CAST(store_id AS BIGINT) AS store_id,
    CAST(sales_person_id AS BIGINT) AS sales_person_id,
    {{ month_label("month_start") }} AS sales_month,
    -- NULL when the file's rows sum to more than DECIMAL(18, 2) holds: that file cannot be
    -- stored (the run sets it aside), and a cast would fail the whole batch instead.
    CASE WHEN total_sales <= {{ MAX_STORABLE_AMOUNT }}
         THEN CAST(total_sales AS DECIMAL(18, 2)) END AS total_sales,
    CAST(sales_rows AS BIGINT) AS sales_rows
FROM per_file

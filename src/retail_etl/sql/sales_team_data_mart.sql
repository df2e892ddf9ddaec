-- sales_team_data_mart contributions: what each source file adds to each store, sales person
-- and month. Input: valid_rows, dim_sales_team. The incentive (rank 1 per store and month) is
-- applied after merging, in marts.py, because it depends on the whole month.
-- The name is cast to text: an engine may hold small lookups as ENUMs. The month is labelled
-- after grouping: once per group, not once per row.
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

SELECT {{ broadcast("sp") }}
    p.ledger_id,
    p.store_id,
    p.sales_person_id,
    CAST(sp.sales_person_full_name AS STRING) AS full_name,
    {{ month_label("p.month_start") }} AS sales_month,
    -- NULL when the file's rows sum to more than DECIMAL(18, 2) holds: that file cannot be
    -- stored (the run sets it aside), and a cast would fail the whole batch instead.
    CASE WHEN p.total_sales <= {{ MAX_STORABLE_AMOUNT }}
         THEN CAST(p.total_sales AS DECIMAL(18, 2)) END AS total_sales,
    CAST(p.sales_rows AS BIGINT) AS sales_rows
FROM per_file p
JOIN dim_sales_team sp ON sp.sales_person_id = p.sales_person_id
ORDER BY p.ledger_id, p.store_id, p.sales_person_id, p.month_start

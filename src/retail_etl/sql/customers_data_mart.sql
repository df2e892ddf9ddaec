-- customers_data_mart contributions: what each source file adds to each customer and month.
-- Input: valid_rows (the lake rows of this batch), dim_customer (enrich.load_dimensions).
-- The warehouse adds these to the mart (marts.py); a correction subtracts the old file's.
-- The names are cast to text: an engine may hold small lookups as ENUMs.
WITH sales AS (
    SELECT ledger_id, customer_id, {{ month_start("sales_date") }} AS sales_date_month, total_cost
    FROM valid_rows
),

per_file AS (
    SELECT ledger_id, customer_id, sales_date_month,
           SUM(total_cost) AS total_sales, COUNT(*) AS sales_rows
    FROM sales
    GROUP BY ledger_id, customer_id, sales_date_month
)

SELECT {{ broadcast("c") }}
    p.ledger_id,
    p.customer_id,
    CAST(c.customer_full_name AS STRING) AS full_name,
    CAST(c.customer_address AS STRING) AS address,
    CAST(c.customer_phone_number AS STRING) AS phone_number,
    p.sales_date_month,
    -- NULL when the file's rows sum to more than DECIMAL(18, 2) holds: that file cannot be
    -- stored (the run sets it aside), and a cast would fail the whole batch instead.
    CASE WHEN p.total_sales <= {{ MAX_STORABLE_AMOUNT }}
         THEN CAST(p.total_sales AS DECIMAL(18, 2)) END AS total_sales,
    CAST(p.sales_rows AS BIGINT) AS sales_rows
FROM per_file p
JOIN dim_customer c ON c.customer_id = p.customer_id
ORDER BY p.ledger_id, p.customer_id, p.sales_date_month

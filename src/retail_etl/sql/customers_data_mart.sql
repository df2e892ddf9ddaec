-- customers_data_mart contributions: what each source file adds to each customer and month.
-- Input: valid_rows (the lake rows of a batch, or those of the files its corrections replace).
-- The warehouse adds these, summed per mart row, to the mart (marts/merge.py), and takes the
-- names from its customer table there: per file and customer they would be millions of
-- copies of the same text.
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

SELECT
    CAST(ledger_id AS BIGINT) AS ledger_id,
    CAST(customer_id AS BIGINT) AS customer_id,
    sales_date_month,
    -- NULL when the file's rows sum to more than DECIMAL(18, 2) holds: that file cannot be
    -- stored (the run sets it aside), and a cast would fail the whole batch instead.
    CASE WHEN total_sales <= {{ MAX_STORABLE_AMOUNT }}
         THEN CAST(total_sales AS DECIMAL(18, 2)) END AS total_sales,
    CAST(sales_rows AS BIGINT) AS sales_rows
FROM per_file

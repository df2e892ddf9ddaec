-- Daily sums per source file, day and product name, for the daily report (marts/daily.py).
-- Input: valid_rows (the lake rows of this batch).
SELECT
    CAST(ledger_id AS BIGINT) AS ledger_id,
    sales_date,
    product_name,
    CAST(SUM(total_cost) AS DECIMAL(38, 2)) AS total_sales,
    CAST(SUM(quantity) AS BIGINT) AS items,
    CAST(COUNT(*) AS BIGINT) AS sales_rows
FROM valid_rows
GROUP BY ledger_id, sales_date, product_name
ORDER BY ledger_id, sales_date, product_name

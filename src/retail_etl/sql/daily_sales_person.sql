-- Daily sums per source file, day, store and sales person, for the daily report (marts/daily.py).
-- Input: valid_rows (the lake rows of this batch, store_id included).
SELECT
    CAST(ledger_id AS BIGINT) AS ledger_id,
    sales_date,
    CAST(store_id AS BIGINT) AS store_id,
    CAST(sales_person_id AS BIGINT) AS sales_person_id,
    CAST(SUM(total_cost) AS DECIMAL(38, 2)) AS total_sales,
    CAST(SUM(quantity) AS BIGINT) AS items,
    CAST(COUNT(*) AS BIGINT) AS sales_rows
FROM valid_rows
GROUP BY ledger_id, sales_date, store_id, sales_person_id
ORDER BY ledger_id, sales_date, store_id, sales_person_id

-- Row rules (SPEC section 4) and enrichment, shared by every engine.
-- Input: raw_rows(ledger_id, customer_id, store_id, product_name, sales_date, sales_person_id,
--                 price, quantity, total_cost, additional_column, extra_values) as text,
--        batch_files(ledger_id, file_name), dim_customer, dim_store, dim_sales_team, dim_product.
-- Output: one row per input row; kind = 'valid' rows are enriched, 'rejected' rows keep their
-- raw values and say why in reject_reason.
-- malformed_lines (Spark): raw_rows also carries the lines the CSV reader could not split into
-- the header's columns, with malformed_reason set; they come out as kind = 'malformed' so one
-- pass over the files yields everything. DuckDB's reader sets such lines aside itself.
{%- set malformed_lines = malformed_lines | default(false) %}
{%- macro as_integer(col) -%}
CASE WHEN {{ matches("trim(" ~ col ~ ")", INTEGER) }} THEN CAST(trim({{ col }}) AS BIGINT) END
{%- endmacro %}
{%- macro as_money(col) -%}
CASE WHEN {{ matches("trim(" ~ col ~ ")", MONEY) }} THEN TRY_CAST(trim({{ col }}) AS DECIMAL(18, 2)) END
{%- endmacro %}
{%- macro is_empty(col) -%}
({{ col }} IS NULL OR trim({{ col }}) = '')
{%- endmacro %}
{%- macro integer_problem(col) -%}
CASE WHEN {{ is_empty("t.raw_" ~ col) }} THEN '{{ col }} is empty'
     WHEN t.{{ col }} IS NULL THEN '{{ col }} is not an integer' END
{%- endmacro %}
{%- macro money_problem(col) -%}
CASE WHEN {{ is_empty("t.raw_" ~ col) }} THEN '{{ col }} is empty'
     WHEN t.{{ col }} IS NULL AND {{ matches("trim(t.raw_" ~ col ~ ")", NUMBER) }}
          THEN '{{ col }} has more than 2 decimal places or is too large'
     WHEN t.{{ col }} IS NULL THEN '{{ col }} is not a number'
     WHEN t.{{ col }} < 0 THEN '{{ col }} is negative' END
{%- endmacro %}

WITH typed AS (
    SELECT
        ledger_id,
        {{ as_integer("customer_id") }} AS customer_id,
        {{ as_integer("store_id") }} AS store_id,
        trim(product_name) AS product_name,
        CASE WHEN {{ matches("trim(sales_date)", ISO_DATE) }}
             THEN TRY_CAST(trim(sales_date) AS DATE) END AS sales_date,
        {{ as_integer("sales_person_id") }} AS sales_person_id,
        {{ as_money("price") }} AS price,
        {{ as_integer("quantity") }} AS quantity,
        {{ as_money("total_cost") }} AS total_cost,
        additional_column,
        customer_id AS raw_customer_id,
        store_id AS raw_store_id,
        product_name AS raw_product_name,
        sales_date AS raw_sales_date,
        sales_person_id AS raw_sales_person_id,
        price AS raw_price,
        quantity AS raw_quantity,
        total_cost AS raw_total_cost,
        extra_values{% if malformed_lines %},
        malformed_reason{% endif %}
    FROM raw_rows
),

products AS (
    -- a product name listed twice must not duplicate sales rows
    SELECT name, MAX(id) AS product_id FROM dim_product GROUP BY name
),

enriched AS (
    SELECT {{ broadcast("c", "s", "sp", "p") }}
        t.*,
        c.first_name || ' ' || c.last_name AS customer_full_name,
        c.address AS customer_address,
        c.phone_number AS customer_phone_number,
        s.address AS store_address,
        s.store_manager_name,
        sp.first_name || ' ' || sp.last_name AS sales_person_full_name,
        p.product_id,
        -- Cheap test first: the reasons are only spelled out for the (rare) rejected rows.
        COALESCE(
            t.customer_id IS NOT NULL AND t.store_id IS NOT NULL AND t.product_name <> ''
            AND t.sales_date IS NOT NULL AND t.sales_person_id IS NOT NULL
            AND t.price >= 0 AND t.quantity > 0 AND t.total_cost >= 0
            AND c.customer_id IS NOT NULL AND s.id IS NOT NULL AND sp.id IS NOT NULL,
            FALSE
        ) AS is_valid,
        c.customer_id IS NOT NULL AS customer_known,
        s.id IS NOT NULL AS store_known,
        sp.id IS NOT NULL AS sales_person_known
    FROM typed t
    LEFT JOIN dim_customer c ON c.customer_id = t.customer_id
    LEFT JOIN dim_store s ON s.id = t.store_id
    LEFT JOIN dim_sales_team sp ON sp.id = t.sales_person_id
    LEFT JOIN products p ON p.name = t.product_name
),

checked AS (
    SELECT
        t.*,
        {% if malformed_lines %}coalesce(t.malformed_reason, {% endif -%}
        CASE WHEN NOT t.is_valid THEN concat_ws('; ',
            {{ integer_problem("customer_id") }},
            {{ integer_problem("store_id") }},
            CASE WHEN {{ is_empty("t.raw_product_name") }} THEN 'product_name is empty' END,
            CASE WHEN {{ is_empty("t.raw_sales_date") }} THEN 'sales_date is empty'
                 WHEN t.sales_date IS NULL THEN 'sales_date is not a valid YYYY-MM-DD date' END,
            {{ integer_problem("sales_person_id") }},
            {{ money_problem("price") }},
            CASE WHEN {{ is_empty("t.raw_quantity") }} THEN 'quantity is empty'
                 WHEN t.quantity IS NULL THEN 'quantity is not an integer'
                 WHEN t.quantity <= 0 THEN 'quantity is not greater than 0' END,
            {{ money_problem("total_cost") }},
            CASE WHEN t.customer_id IS NOT NULL AND NOT t.customer_known
                 THEN 'customer_id not in customer' END,
            CASE WHEN t.store_id IS NOT NULL AND NOT t.store_known
                 THEN 'store_id not in store' END,
            CASE WHEN t.sales_person_id IS NOT NULL AND NOT t.sales_person_known
                 THEN 'sales_person_id not in sales_team' END
        ) END{% if malformed_lines %}){% endif %} AS reject_reason
    FROM enriched t
)

SELECT {{ broadcast("f") }}
    CASE {% if malformed_lines %}WHEN malformed_reason IS NOT NULL THEN 'malformed' {% endif -%}
         WHEN reject_reason IS NULL THEN 'valid' ELSE 'rejected' END AS kind,
    CASE WHEN reject_reason IS NULL THEN {{ month_label("sales_date") }} END AS sales_month,
    CASE WHEN reject_reason IS NULL THEN store_id END AS store_id,
    checked.ledger_id AS _ledger,
    customer_id,
    product_name,
    sales_date,
    sales_person_id,
    price,
    quantity,
    total_cost,
    additional_column,
    customer_full_name,
    customer_address,
    customer_phone_number,
    store_address,
    store_manager_name,
    sales_person_full_name,
    product_id,
    f.file_name AS source_file,
    checked.ledger_id AS ledger_id,
    CAST({{ run_id }} AS BIGINT) AS run_id,
    -- raw values only where a person needs them: on rejected rows
    CASE WHEN reject_reason IS NOT NULL THEN raw_customer_id END AS raw_customer_id,
    CASE WHEN reject_reason IS NOT NULL THEN raw_store_id END AS raw_store_id,
    CASE WHEN reject_reason IS NOT NULL THEN raw_product_name END AS raw_product_name,
    CASE WHEN reject_reason IS NOT NULL THEN raw_sales_date END AS raw_sales_date,
    CASE WHEN reject_reason IS NOT NULL THEN raw_sales_person_id END AS raw_sales_person_id,
    CASE WHEN reject_reason IS NOT NULL THEN raw_price END AS raw_price,
    CASE WHEN reject_reason IS NOT NULL THEN raw_quantity END AS raw_quantity,
    CASE WHEN reject_reason IS NOT NULL THEN raw_total_cost END AS raw_total_cost,
    CASE WHEN reject_reason IS NOT NULL THEN extra_values END AS extra_values,
    reject_reason
FROM checked
JOIN batch_files f ON f.ledger_id = checked.ledger_id

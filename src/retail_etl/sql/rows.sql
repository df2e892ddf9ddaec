-- Row rules (SPEC section 4) and enrichment, shared by every engine.
-- Input: raw_rows(ledger_id, customer_id, store_id, product_name, sales_date, sales_person_id,
--                 price, quantity, total_cost, additional_column, extra_values) as text,
--        batch_files(ledger_id, file_name), and the lookup tables of enrich.load_dimensions:
--        dim_customer, dim_store, dim_sales_team, dim_product (columns named as in the lake).
-- Parameters: run_id; limits (engines.base.RowLimits) and product_name_length: what a row
-- may hold so that the warehouse can store, sum and report it.
-- Output: one row per input row; kind = 'valid' rows are enriched, 'rejected' rows keep their
-- raw values and say why in reject_reason.
-- malformed_lines (Spark): raw_rows also carries the lines the CSV reader could not split into
-- the header's columns, with malformed_reason set; they come out as kind = 'malformed', so the
-- same passes over the files yield them. DuckDB's reader sets such lines aside itself.
{%- set malformed_lines = malformed_lines | default(false) %}
{%- set max_amount = limits.max_amount %}
{%- set min_date = "DATE '" ~ limits.min_sales_date.isoformat() ~ "'" %}
{%- set max_date = "DATE '" ~ limits.max_sales_date.isoformat() ~ "'" %}
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
     WHEN t.{{ col }} < 0 THEN '{{ col }} is negative'
     WHEN t.{{ col }} > {{ limits.max_amount }}
          THEN '{{ col }} is more than {{ limits.max_amount }} (rules.max_amount)' END
{%- endmacro %}

WITH typed AS (
    SELECT
        ledger_id,
        {{ strict_cast("customer_id", "integer") }} AS customer_id,
        {{ strict_cast("store_id", "integer") }} AS store_id,
        trim(product_name) AS product_name,
        {{ strict_cast("sales_date", "date") }} AS sales_date,
        {{ strict_cast("sales_person_id", "integer") }} AS sales_person_id,
        {{ strict_cast("price", "money") }} AS price,
        {{ strict_cast("quantity", "integer") }} AS quantity,
        {{ strict_cast("total_cost", "money") }} AS total_cost,
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

enriched AS (
    SELECT {{ broadcast("c", "s", "sp", "p") }}
        t.*,
        c.customer_full_name,
        c.customer_address,
        c.customer_phone_number,
        s.store_address,
        s.store_manager_name,
        sp.sales_person_full_name,
        p.product_id,
        -- Cheap test first: the reasons are only spelled out for the (rare) rejected rows.
        COALESCE(
            t.customer_id IS NOT NULL AND t.store_id IS NOT NULL AND t.product_name <> ''
            AND length(t.product_name) <= {{ product_name_length }}
            AND t.sales_date BETWEEN {{ min_date }} AND {{ max_date }}
            AND t.sales_person_id IS NOT NULL
            AND t.price BETWEEN 0 AND {{ max_amount }}
            AND t.quantity BETWEEN 1 AND {{ limits.max_quantity }}
            AND t.total_cost BETWEEN 0 AND {{ max_amount }}
            AND c.customer_id IS NOT NULL AND s.store_id IS NOT NULL
            AND sp.sales_person_id IS NOT NULL,
            FALSE
        ) AS is_valid,
        c.customer_id IS NOT NULL AS customer_known,
        s.store_id IS NOT NULL AS store_known,
        sp.sales_person_id IS NOT NULL AS sales_person_known
    FROM typed t
    LEFT JOIN dim_customer c ON c.customer_id = t.customer_id
    LEFT JOIN dim_store s ON s.store_id = t.store_id
    LEFT JOIN dim_sales_team sp ON sp.sales_person_id = t.sales_person_id
    LEFT JOIN dim_product p ON p.product_name = t.product_name
),

checked AS (
    SELECT
        t.*,
        {% if malformed_lines %}coalesce(t.malformed_reason, {% endif -%}
        CASE WHEN NOT t.is_valid THEN concat_ws('; ',
            {{ integer_problem("customer_id") }},
            {{ integer_problem("store_id") }},
            CASE WHEN {{ is_empty("t.raw_product_name") }} THEN 'product_name is empty'
                 WHEN length(t.product_name) > {{ product_name_length }}
                 THEN 'product_name is longer than {{ product_name_length }} characters' END,
            CASE WHEN {{ is_empty("t.raw_sales_date") }} THEN 'sales_date is empty'
                 WHEN t.sales_date IS NULL THEN 'sales_date is not a valid YYYY-MM-DD date'
                 WHEN t.sales_date < {{ min_date }}
                 THEN 'sales_date is before {{ limits.min_sales_date }} (rules.min_sales_date)'
                 WHEN t.sales_date > {{ max_date }}
                 THEN 'sales_date is after {{ limits.max_sales_date }} (rules.max_days_ahead)' END,
            {{ integer_problem("sales_person_id") }},
            {{ money_problem("price") }},
            CASE WHEN {{ is_empty("t.raw_quantity") }} THEN 'quantity is empty'
                 WHEN t.quantity IS NULL THEN 'quantity is not an integer'
                 WHEN t.quantity <= 0 THEN 'quantity is not greater than 0'
                 WHEN t.quantity > {{ limits.max_quantity }}
                 THEN 'quantity is more than {{ limits.max_quantity }} (rules.max_quantity)' END,
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

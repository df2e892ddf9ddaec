"""The textbook Spark job, the way most tutorials write it: the baseline retail-etl's Spark
engine is measured against (`retail-etl bench`). Deliberately NOT optimised:

* `inferSchema` on every file (a second pass over the data), one read per file, `union`;
* inner joins to the dimensions (read from the warehouse's Parquet export) without broadcast
  hints;
* the marts with window functions + `distinct` instead of a `groupBy`;
* Parquet written with `partitionBy`.

It ships inside the package (retail_etl/tools/bench/) and imports nothing from it.

Usage: python textbook_spark.py DIMS_DIR OUT_DIR CSV [CSV...]
Prints one JSON line with the mart totals so the benchmark can check all variants agree.
"""

from __future__ import annotations

import json
import sys
from functools import reduce

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F


def main() -> None:
    dims_dir, out_dir, *csv_files = sys.argv[1:]
    spark = SparkSession.builder.master("local[*]").appName("textbook-retail").getOrCreate()
    frames = [
        spark.read.option("header", True).option("inferSchema", True).csv(path)
        for path in csv_files
    ]
    sales = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    sales = sales.withColumn("sales_date", F.to_date("sales_date"))
    sales = sales.filter(
        (F.col("quantity") > 0) & (F.col("price") >= 0) & (F.col("total_cost") >= 0)
    ).withColumn("total_cost", F.col("total_cost").cast("decimal(18,2)"))

    customer = spark.read.parquet(f"{dims_dir}/customer.parquet").select(
        "customer_id", "first_name", "last_name", "address", "phone_number"
    )
    store = spark.read.parquet(f"{dims_dir}/store.parquet").select("id", "address")
    team = spark.read.parquet(f"{dims_dir}/sales_team.parquet").select(
        "id", "first_name", "last_name"
    )
    enriched = (
        sales.join(customer, "customer_id")
        .join(
            store.withColumnRenamed("id", "store_id").withColumnRenamed("address", "store_address"),
            "store_id",
        )
        .join(
            team.withColumnRenamed("id", "sales_person_id")
            .withColumnRenamed("first_name", "sp_first_name")
            .withColumnRenamed("last_name", "sp_last_name"),
            "sales_person_id",
        )
        .withColumn("sales_month", F.date_format("sales_date", "yyyy-MM"))
    )
    enriched.write.mode("overwrite").partitionBy("sales_month", "store_id").parquet(
        f"{out_dir}/sales"
    )

    by_customer = Window.partitionBy("customer_id", "sales_month")
    customers_mart = (
        enriched.withColumn("total_sales", F.sum("total_cost").over(by_customer))
        .select(
            "customer_id",
            F.concat_ws(" ", "first_name", "last_name").alias("full_name"),
            "address",
            "phone_number",
            "sales_month",
            "total_sales",
        )
        .distinct()
    )
    by_seller = Window.partitionBy("store_id", "sales_person_id", "sales_month")
    team_mart = (
        enriched.withColumn("total_sales", F.sum("total_cost").over(by_seller))
        .select(
            "store_id",
            "sales_person_id",
            F.concat_ws(" ", "sp_first_name", "sp_last_name").alias("full_name"),
            "sales_month",
            "total_sales",
        )
        .distinct()
    )
    rank = Window.partitionBy("store_id", "sales_month").orderBy(F.desc("total_sales"))
    team_mart = team_mart.withColumn("rank", F.rank().over(rank)).withColumn(
        "incentive",
        F.when(F.col("rank") == 1, F.round(F.col("total_sales") * F.lit(0.01), 2)).otherwise(0),
    )
    customers_mart.write.mode("overwrite").parquet(f"{out_dir}/customers_data_mart")
    team_mart.write.mode("overwrite").parquet(f"{out_dir}/sales_team_data_mart")
    customer_total = customers_mart.agg(F.sum("total_sales")).first()[0]  # type: ignore[index]
    team_total = team_mart.agg(F.sum("total_sales")).first()[0]  # type: ignore[index]
    print(json.dumps({"customer_total": str(customer_total), "team_total": str(team_total)}))
    spark.stop()


if __name__ == "__main__":
    main()

from retail_etl.cli import main

main()

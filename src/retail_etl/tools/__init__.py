"""The tools a user runs beside the nightly job: synthetic sales (generate.py), a sample chain's
dimension rows (sample_data.py), the whole job on embedded defaults (demo.py) and the
benchmark of every variant (bench/)."""

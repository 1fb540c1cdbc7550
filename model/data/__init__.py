"""Data: SIGMA-format rows and their parquet files, ``sigma batch`` over a dataset, and the SIGMA-GEN converter
that turns annotated pictures into training rows."""

"""The on-disk collection format (Parquet shards + manifest) and its reader: the bottom layer
that collection writes and training / calibration read, so no stage imports another for it."""

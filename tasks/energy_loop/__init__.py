"""The energy loop's own work: its inputs checked (`inputs`), the machine calibrated (`calibrate`,
`calibrate_parallel`), one candidate produced and measured (`candidate`), scale-out (`parallel`), the iteration
table (`report`), progress lines (`progress`); its Prefect stages (`stages`, `dask_stages`)."""

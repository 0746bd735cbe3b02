"""Backend plugins: the versioned API a device's driver code implements (`api`), how the driver
finds plugins by name (`registry`), and the plugins qtestbed ships (`simulators`, `qiskit`)."""

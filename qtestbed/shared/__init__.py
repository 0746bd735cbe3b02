"""The lower layer shared by broker, drivers and clients: circuit codec, link keys, wire constants.

It imports only the standard library, Qiskit, pyzmq and the generated stubs."""

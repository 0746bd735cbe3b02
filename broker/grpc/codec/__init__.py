"""Pure protobuf <-> domain conversions, one module per service."""

"""The gRPC edge: interceptor, servicers and codecs. Protobuf stops here."""

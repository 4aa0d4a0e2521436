/// Wire: the generated protobuf messages (proto/) and the frame codec.

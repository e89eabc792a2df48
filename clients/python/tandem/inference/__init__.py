"""Generated stubs of the Open Inference Protocol (KServe v2), protobuf package `inference`
(proto/tandem/inference/open_inference.proto), as Tandem serves it. `make gen` writes them.

tritonclient's own stubs define the same protobuf messages, so one process cannot import
both: a test that drives `tritonclient.grpc` runs it in a child process.
"""

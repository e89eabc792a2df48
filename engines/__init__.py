"""Tandem's engines: worker processes that run PyTorch training and inference.

torch lives here and nowhere above; nothing here imports grpc or the server.
"""

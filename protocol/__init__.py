"""The contract between chkdd and its clients: messages, codec, error codes, paths, config.

Imports msgspec and the standard library only, so every client can use it cheaply.
"""

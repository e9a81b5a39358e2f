"""Servers: the project's OpenAI-compatible test server and the managed vLLM server for `--serve`."""

"""Tests of the fake broker: the pure engine, and its HTTP/WS surface through real alpaca-py."""

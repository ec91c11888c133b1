"""Proxy tasks: the data, the small networks and the short training that judge a layer."""

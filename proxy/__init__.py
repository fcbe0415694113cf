"""The request path: HTTP proxy, gRPC DataPlane and the least-loaded Router they share."""

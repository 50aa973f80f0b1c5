"""Protocol schemas, apart from the routes: what each protocol's bodies look like.

`core`: the aeserve API (`/encode`, `/reconstruct`, `/anomaly-score`); `v2`: the Open Inference
Protocol. They describe the wire format for OpenAPI and for clients; the hot path decodes bodies
with the codecs, never by validating every float through pydantic.
"""

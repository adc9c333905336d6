"""Input pipeline internals, one module per concern; the public API is `lead_kt.input_pipeline`."""

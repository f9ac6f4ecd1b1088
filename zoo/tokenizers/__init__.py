"""In-graph tokenizers: Keras layers built on tensorflow-text ops."""

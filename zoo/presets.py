"""Model presets: plain dicts of architecture hyper-parameters, per family.

`vocabulary_size` is the target given to the vocabulary learner; the learned
vocabulary can differ (on SST-2 a target of 8,000 or of 16,000 both give
8,156 tokens: rarer words fall under the learner's count threshold), and the
real size is what config.json records.

A preset names a model size; the trainer merges it with the task's choices
(vocabulary size, number of classes) and writes the result to config.json.
Encoder `conv_kernel_size` > 0 adds a residual convolution of that (odd)
width in front of the transformer blocks (zoo.layers.masked_conv); 0 = none.
"""

ENCODER_PRESETS = {
    # For tests and smoke runs: trains in seconds.
    "tiny": dict(vocabulary_size=1000, sequence_length=32, hidden_dim=32,
                 num_layers=1, num_heads=2, intermediate_dim=64, dropout=0.1,
                 pooling="mean", conv_kernel_size=0),
    # The SST-2 recipe: trains from scratch in minutes on 2 CPU cores.
    "small": dict(vocabulary_size=8000, sequence_length=64, hidden_dim=128,
                  num_layers=2, num_heads=4, intermediate_dim=256, dropout=0.2,
                  token_dropout=0.3, pooling="mean", conv_kernel_size=0),
    # BERT-Mini-sized; wants a GPU or a long CPU run.
    "base": dict(vocabulary_size=16000, sequence_length=128, hidden_dim=256,
                 num_layers=4, num_heads=4, intermediate_dim=1024, dropout=0.1,
                 pooling="mean", conv_kernel_size=0),
}

# Character-level decoders. vocabulary_size is set from the training text.
DECODER_PRESETS = {
    "tiny": dict(vocabulary_size=0, sequence_length=32, hidden_dim=32,
                 num_layers=1, num_heads=2, intermediate_dim=64, dropout=0.0),
    # The tiny-shakespeare recipe: <= 45 minutes on 2 CPU cores. The context
    # holds a 32-character prompt plus 256 generated characters.
    "small": dict(vocabulary_size=0, sequence_length=288, hidden_dim=256,
                  num_layers=4, num_heads=4, intermediate_dim=1024,
                  dropout=0.0),
}

# Encoder-decoders over a joint SentencePiece vocabulary. sequence_length is
# the longest source and the longest target, in pieces (EOS included).
SEQ2SEQ_PRESETS = {
    "tiny": dict(vocabulary_size=500, sequence_length=32, hidden_dim=32,
                 num_encoder_layers=1, num_decoder_layers=1, num_heads=2,
                 intermediate_dim=64, dropout=0.0, max_beam_size=4),
    # The Multi30k recipe: <= 90 minutes on 2 CPU cores.
    "small": dict(vocabulary_size=6000, sequence_length=64, hidden_dim=256,
                  num_encoder_layers=3, num_decoder_layers=3, num_heads=4,
                  intermediate_dim=1024, dropout=0.1, max_beam_size=8),
}

PRESETS = {"encoder": ENCODER_PRESETS, "decoder": DECODER_PRESETS,
           "seq2seq": SEQ2SEQ_PRESETS}


def get_preset(family, name):
  """Returns a copy of preset `name` of `family`; ValueError names the choices."""
  presets = PRESETS[family]
  if name not in presets:
    raise ValueError(
        f"Unknown {family} preset {name!r}; choose one of {sorted(presets)}")
  return dict(presets[name])

"""keras-hub's WordPiece encoders (BERT, DistilBERT) as zoo EncoderBackbones.

Both are post-LayerNorm encoders with a LayerNorm over the summed token,
position (and for BERT, token type) embeddings, layer norm epsilon 1e-12;
BERT's feed-forward GELU is the tanh approximation, DistilBERT's the exact
one. zoo.backbones.encoder builds that layout (normalize_first=False,
embedding_norm=True), so a converted model trains and exports like any zoo
encoder: packing, adversarial training and hashed dropout included. BERT's
pooler (tanh Dense over [CLS]) becomes the classifier's "pooler" pooling.
The tokenizer is zoo.tokenizers.preset_wordpiece, configured as the preset's.
"""

import dataclasses
import os

# Models are fine-tuned at this many positions unless --model_overrides says
# otherwise (at most the preset's max_sequence_length).
DEFAULT_SEQUENCE_LENGTH = 128

_BLOCK_RULES = [
    (r"transformer_layer_(\d+)/self_attention_layer/(query|key|value|"
     r"attention_output)/(kernel|bias)", r"backbone/block_\1/attention/\2/\3"),
    (r"transformer_layer_(\d+)/self_attention_layer_norm/(gamma|beta)",
     r"backbone/block_\1/attention_norm/\2"),
    (r"transformer_layer_(\d+)/feedforward_layer_norm/(gamma|beta)",
     r"backbone/block_\1/mlp_norm/\2"),
    (r"transformer_layer_(\d+)/feedforward_intermediate_dense/(kernel|bias)",
     r"backbone/block_\1/mlp_in/\2"),
    (r"transformer_layer_(\d+)/feedforward_output_dense/(kernel|bias)",
     r"backbone/block_\1/mlp_out/\2"),
    (r"embeddings_layer_norm/(gamma|beta)", r"backbone/embedding_layer_norm/\1"),
]


@dataclasses.dataclass(frozen=True)
class WordPieceEncoder:
  """How one keras-hub encoder class maps onto zoo's EncoderBackbone."""
  activation: str  # the feed-forward activation (zoo.layers.activations)
  pooling: str  # the classifier's default pooling
  token_types: bool  # has segment (token type) embeddings
  rules: tuple  # (keras-hub weight path regex, zoo path template[, optional])
  licence: str  # the licence the original weights were released under
  family: str = "encoder"

  def architecture(self, backbone):
    """A zoo encoder preset dict for a keras-hub backbone."""
    config = backbone.get_config()
    return dict(
        vocabulary_size=config["vocabulary_size"],
        sequence_length=min(DEFAULT_SEQUENCE_LENGTH,
                            config["max_sequence_length"]),
        max_sequence_length=config["max_sequence_length"],
        hidden_dim=config["hidden_dim"], num_layers=config["num_layers"],
        num_heads=config["num_heads"],
        intermediate_dim=config["intermediate_dim"],
        dropout=config["dropout"], token_dropout=0.0, pooling=self.pooling,
        conv_kernel_size=0,
        num_token_types=config.get("num_segments", 2) if self.token_types
        else 0,
        normalize_first=False, embedding_norm=True, layer_norm_epsilon=1e-12,
        activation=self.activation)

  def write_tokenizer(self, tokenizer, model_dir, file_name):
    """Writes the preset's vocabulary to model_dir/file_name; returns the
    model-config entries that rebuild its tokenizer."""
    from zoo.tokenizers.wordpiece import write_vocabulary
    write_vocabulary(tokenizer.get_vocabulary(),
                     os.path.join(model_dir, file_name))
    return {"vocabulary_file": file_name, "tokenizer": "preset_wordpiece",
            "tokenizer_options": {
                "lower_case": bool(tokenizer.lowercase),
                "strip_accents": bool(tokenizer.strip_accents),
                "split_on_cjk": bool(getattr(tokenizer, "split_on_cjk",
                                             True))}}

  def copy_weights(self, backbone, model, sequence_length):
    """Fills model (a zoo TextClassifier or MaskedLM, variables built) with
    the preset's weights; position embeddings cut to sequence_length."""
    from zoo.pretrained import copy_weights

    def reshape(path, value):
      if path.endswith("position_embedding/embeddings"):
        return value[:sequence_length]
      return value

    copy_weights(self.rules, backbone, model, reshape)


BERT = WordPieceEncoder(
    activation="gelu_approximate", pooling="pooler", token_types=True,
    licence="Apache-2.0",
    rules=tuple(_BLOCK_RULES) + (
        (r"token_embedding/embeddings",
         r"backbone/embedding/token_embedding/embeddings"),
        (r"position_embedding/embeddings",
         r"backbone/embedding/position_embedding/embeddings"),
        (r"segment_embedding/embeddings", r"backbone/type_embedding/embeddings"),
        (r"pooled_dense/(kernel|bias)", r"pooler/\1", True),
    ))

DISTIL_BERT = WordPieceEncoder(
    activation="gelu", pooling="cls", token_types=False, licence="Apache-2.0",
    rules=tuple(_BLOCK_RULES) + (
        (r"token_and_position_embedding/(token_embedding|position_embedding)"
         r"/embeddings", r"backbone/embedding/\1/embeddings"),
    ))

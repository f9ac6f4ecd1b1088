"""keras-hub's GPT-2 as a zoo DecoderBackbone.

GPT-2 is the layout zoo.backbones.decoder already has: pre-LayerNorm blocks
(epsilon 1e-5), learned positions, a final LayerNorm and the output
projection tied to the token embedding; its feed-forward GELU is the tanh
approximation. Two things differ and are converted:
  - keras-hub projects queries, keys and values with three [D, H, Dh]
    kernels, ours with one fused [D, 3D] kernel (columns q, k, v, each in
    head-major order), and its output kernel is [H, Dh, D] where ours is
    [D, D];
  - our decoders pad with id 0, and GPT-2 has no padding token (its id 0 is
    "!"), so the model's ids are GPT-2's plus one: the embedding gains a
    zero row 0 (PAD, never generated) in front of GPT-2's rows. The
    byte-level BPE tokenizer (zoo.tokenizers.byte_pair) gives ids in that
    space, and <|endoftext|> is both the start token and the end of
    generation, as in keras-hub's GPT2CausalLM.
"""

import json
import os

import numpy as np

VOCABULARY_FILE = "vocabulary.json"
MERGES_FILE = "merges.txt"


class GPT2Converter:
  """How keras-hub's GPT2Backbone maps onto zoo's DecoderBackbone."""

  family = "decoder"
  licence = "MIT"  # OpenAI's GPT-2 weights

  def architecture(self, backbone):
    config = backbone.get_config()
    return dict(
        vocabulary_size=config["vocabulary_size"] + 1,  # + PAD in front
        sequence_length=config["max_sequence_length"],
        max_sequence_length=config["max_sequence_length"],
        hidden_dim=config["hidden_dim"], num_layers=config["num_layers"],
        num_heads=config["num_heads"],
        intermediate_dim=config["intermediate_dim"],
        dropout=config["dropout"], activation="gelu_approximate")

  def write_tokenizer(self, tokenizer, model_dir, unused_file_name):
    """Writes the preset's vocabulary.json and merges.txt to model_dir;
    returns the model-config entries that rebuild its tokenizer."""
    vocabulary = {token: tokenizer.token_to_id(token)
                  for token in tokenizer.get_vocabulary()}  # {token: id}
    with open(os.path.join(model_dir, VOCABULARY_FILE), "w",
              encoding="utf-8") as f:
      json.dump(vocabulary, f, ensure_ascii=False)
    with open(os.path.join(model_dir, MERGES_FILE), "w", encoding="utf-8") as f:
      f.write("\n".join(tokenizer.merges) + "\n")
    return {"vocabulary_file": VOCABULARY_FILE, "merges_file": MERGES_FILE,
            "tokenizer": "byte_pair",
            "end_id": int(tokenizer.end_token_id) + 1}  # <|endoftext|>

  def copy_weights(self, backbone, model, sequence_length):
    """Fills a built zoo CausalLanguageModel with the preset's weights."""
    from zoo.pretrained import PresetError, assign_weights
    source = {w.path: w.numpy() for w in backbone.weights}
    used = set()

    def take(path):
      used.add(path)
      return source[path]

    embedding = take("token_embedding/embeddings")  # [V, D]
    hidden = embedding.shape[1]
    values = {
        "backbone/token_embedding/embeddings": np.concatenate(
            [np.zeros_like(embedding[:1]), embedding]),  # [V + 1, D]
        "backbone/position_embedding/embeddings":
            take("position_embedding/embeddings")[:sequence_length],
        "backbone/final_norm/gamma": take("layer_norm/gamma"),
        "backbone/final_norm/beta": take("layer_norm/beta"),
    }
    for i in range(model.backbone.num_layers):
      layer, block = f"transformer_layer_{i}/", f"backbone/block_{i}/"
      attention = layer + "self_attention/"
      values[block + "attention/qkv/kernel"] = np.concatenate(
          [take(attention + f"{n}/kernel").reshape(hidden, -1)
           for n in ("query", "key", "value")], axis=1)  # [D, 3D]
      values[block + "attention/qkv/bias"] = np.concatenate(
          [take(attention + f"{n}/bias").reshape(-1)
           for n in ("query", "key", "value")])  # [3D]
      values[block + "attention/output/kernel"] = take(
          attention + "attention_output/kernel").reshape(-1, hidden)  # [D, D]
      values[block + "attention/output/bias"] = take(
          attention + "attention_output/bias")
      for ours, theirs in (("attention_norm", "self_attention_layer_norm"),
                           ("mlp_norm", "feedforward_layer_norm"),
                           ("mlp_in", "feedforward_intermediate_dense"),
                           ("mlp_out", "feedforward_output_dense")):
        for name in (("gamma", "beta") if "norm" in ours
                     else ("kernel", "bias")):
          values[f"{block}{ours}/{name}"] = take(f"{layer}{theirs}/{name}")
    unused = sorted(set(source) - used)
    if unused:
      raise PresetError(f"preset weights with no place in the model: {unused}")
    assign_weights(values, model)


GPT2 = GPT2Converter()

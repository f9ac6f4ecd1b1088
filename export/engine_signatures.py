"""The decoder export's engine signatures: generation one token a call, over slots.

A serving engine (serving/engine.py) drives these to stream tokens and to let
requests join and leave a running batch (iteration-level scheduling):

  engine_init     slot int32[S] -> slot int32[S], context int32[S]
                  (re)allocates S decode slots (S = len(slot)); every slot free.
  engine_prefill  prompt string[B], slot int32[B], max_new_tokens int32[B],
                  temperature float32[B], top_k int32[B], top_p float32[B],
                  seed int64[B] -> token int32[B], text string[B], done
                  bool[B], num_tokens int32[B], prompt_tokens int32[B]
                  reads B prompts into B slots and chooses each one's first
                  token (none when max_new_tokens is 0); prompt_tokens: the
                  positions the prompt took, the start token included.
  engine_step     active bool[S], steps int32[S] -> token, text, done,
                  num_tokens (each [S])
                  advances every active, unfinished slot by up to steps[s]
                  tokens (a loop in the graph: k tokens a call cost one
                  call's overhead); text: the pieces of this call's tokens,
                  token: the slot's last token.

`text` is the new token's text piece: the concatenated pieces of a slot are
the detokenized continuation, as `generate` returns it (piece k is the text
of tokens k-1, k minus the text of token k-1, so a tokenizer that joins
pieces with context, e.g. SentencePiece's spaces, still adds up). `done`: the
slot has its max_new_tokens (or reached the end token or the context); its
token that call is its last. `num_tokens`: tokens generated so far.

State (the decoder's key/value cache, float[S, H, T_max, Dh] a block and a
tensor, written in place as zoo/decoding/slots.py says, and each slot's
token, position, count and settings, written by scatters) lives in variables
of the SavedModel (why not carried through the call: BUILD_NOTES.md, "Engine
signatures"). So the signatures are
stateful: one engine at a time drives a loaded model. Prompts are fitted as
`generate` fits them, settings are validated the same way
(InvalidArgumentError), and randomness is keyed by (seed, position), so a slot
produces the tokens `generate` produces for the same prompt, settings and
seed, whatever the other slots hold.
"""

import tensorflow as tf

from export import input_specs
from zoo.decoding import slots as slots_lib
from zoo.decoding.generation import fit_prompts, validate_settings
from zoo.decoding.sampling import choose_next, suppress

PAD_ID = 0
ENGINE_SIGNATURES = ("engine_init", "engine_prefill", "engine_step")


class EngineState(tf.Module):
  """Slot-indexed variables: the cache and each slot's decoding state."""

  def __init__(self, backbone):
    super().__init__(name="engine_state")
    shape = slots_lib.slot_cache_shape(backbone)  # [None, H, T, Dh]
    empty = [d if d is not None else 0 for d in shape]

    def variable(name, initial, var_shape):
      return tf.Variable(initial, shape=var_shape, trainable=False, name=name)

    self.cache = [
        (variable(f"keys_{i}", tf.zeros(empty), shape),
         variable(f"values_{i}", tf.zeros(empty), shape))
        for i in range(backbone.num_layers)]
    self.slot_fields = {
        "token": tf.int32, "position": tf.int32, "generated": tf.int32,
        "max_new_tokens": tf.int32, "temperature": tf.float32,
        "top_k": tf.int32, "top_p": tf.float32, "seed": tf.int64,
        "done": tf.bool}
    for name, dtype in self.slot_fields.items():
      setattr(self, name, variable(name, tf.zeros([0], dtype), [None]))

  def fields(self):
    return {name: getattr(self, name) for name in self.slot_fields}


def text_pieces(tokenizer, previous, new):
  """The text token `new` adds after token `previous` (PAD: none): string[B].

  previous, new int32[B]; PAD as `new` adds "".
  """
  first = tf.equal(previous, PAD_ID)  # [B]
  pair = tf.where(first[:, None], tf.stack([new, tf.zeros_like(new)], 1),
                  tf.stack([previous, new], 1))  # [B, 2], PAD last if any
  both = tokenizer.detokenize(pair)  # [B]
  before = tokenizer.detokenize(previous[:, None])  # [B] ("" for PAD)
  start = tf.strings.length(before)  # bytes
  return tf.strings.substr(both, start, tf.strings.length(both) - start)


def _choose(model, logits, settings, position):
  logits = suppress(tf.cast(logits, tf.float32), model.suppressed_ids)
  return choose_next(logits, settings["temperature"], settings["top_k"],
                     settings["top_p"], settings["seed"], position)  # [B]


def _finished(model, token, generated, max_new_tokens, position, context):
  """A slot is done after its budget, at the end token, or at the context."""
  finished = (generated >= max_new_tokens) | (position >= context - 1)
  if model.end_id is not None:
    finished |= tf.equal(token, model.end_id)
  return finished


def add_engine_endpoints(archive, model, tokenizer, prompt_ids):
  """Adds the engine signatures to `archive`; prompt_ids(tokenizer, prompt)
  -> (ids, lengths) as the `generate` signature reads prompts."""
  backbone = model.backbone
  context = backbone.sequence_length
  state = EngineState(backbone)
  archive.track(state)

  def init(slot):
    size = tf.shape(slot)[0]
    shape = tf.stack([size] + slots_lib.slot_cache_shape(backbone)[1:])
    ops = []
    for keys, values in state.cache:  # a buffer of its own for each
      ops += [var.assign(tf.raw_ops.Empty(shape=shape, dtype=var.dtype,
                                          init=True))
              for var in (keys, values)]
    for name, var in state.fields().items():
      ops.append(var.assign(tf.zeros([size], state.slot_fields[name])))
    ops.append(state.done.assign(tf.ones([size], tf.bool)))
    with tf.control_dependencies(ops):
      return {"slot": tf.identity(slot), "context": tf.fill([size], context)}

  def prefill(prompt, slot, max_new_tokens, temperature, top_k, top_p, seed):
    batch = tf.shape(prompt)[0]
    checks = validate_settings(batch, context, max_new_tokens, temperature,
                               top_k, top_p, seed)
    checks.append(tf.debugging.assert_equal(
        tf.shape(slot)[0], batch,
        message="slot must have one value per prompt (batch size)"))
    checks.append(tf.debugging.Assert(
        tf.reduce_all((slot >= 0) & (slot < tf.shape(state.done)[0])),
        ["slot must be in [0, number of slots): call engine_init first"]))
    with tf.control_dependencies(checks):  # nothing is written before them
      budget = tf.identity(max_new_tokens)
      slot = tf.identity(slot)
    ids, lengths = prompt_ids(tokenizer, prompt)
    ids, lengths = fit_prompts(ids, lengths, budget, context)  # [B, T], [B]
    logits, cache = slots_lib.prompt_logits(backbone, ids, lengths)  # [B, V]
    settings = dict(temperature=temperature, top_k=top_k, top_p=top_p,
                    seed=seed)
    chosen = _choose(model, logits, settings, lengths)  # position L: [B]
    wanted = budget > 0
    token = tf.where(wanted, chosen, PAD_ID)  # [B]
    generated = tf.cast(wanted, tf.int32)
    done = ~wanted | _finished(model, token, generated, budget, lengths,
                               context)
    ops = slots_lib.write_prompt(state.cache, cache, slot)
    rows = slot[:, None]
    values = dict(token=token, position=lengths, generated=generated,
                  max_new_tokens=budget, done=done, **settings)
    for name, var in state.fields().items():
      ops.append(var.scatter_nd_update(rows, values[name]))
    with tf.control_dependencies(ops):
      return {"token": tf.identity(token),
              "text": text_pieces(tokenizer, tf.zeros_like(token), token),
              "done": tf.identity(done), "num_tokens": tf.identity(generated),
              "prompt_tokens": tf.identity(lengths)}

  def step(active, steps):
    size = tf.shape(state.done)[0]
    checks = [tf.debugging.assert_equal(
        tf.shape(x)[0], size,
        message=f"{name} must have one value per slot (engine_init's size)")
              for name, x in (("active", active), ("steps", steps))]
    with tf.control_dependencies(checks):
      active = tf.identity(active)
      steps = tf.identity(steps)
    s = {name: var.read_value() for name, var in state.fields().items()}

    def body(i, token, position, generated, done, text):
      live = active & ~done & (i < steps)  # [S]
      logits = slots_lib.step_logits(backbone, state.cache, token,
                                     position)  # [S, V]
      chosen = _choose(model, logits, s, position + 1)  # [S]
      new = tf.where(live, chosen, PAD_ID)
      generated += tf.cast(live, tf.int32)
      done |= live & _finished(model, new, generated, s["max_new_tokens"],
                               position + 1, context)
      piece = text_pieces(tokenizer, tf.where(live, token, PAD_ID), new)
      return (i + 1, tf.where(live, new, token),
              tf.where(live, position + 1, position), generated, done,
              tf.strings.join([text, piece]))

    def cond(i, unused_token, unused_position, unused_generated, done,
             unused_text):
      return tf.reduce_any(active & ~done & (i < steps))

    _, token, position, generated, done, text = tf.while_loop(
        cond, body, (tf.constant(0), s["token"], s["position"],
                     s["generated"], s["done"], tf.fill([size], "")),
        parallel_iterations=1)
    ops = [state.token.assign(token), state.position.assign(position),
           state.generated.assign(generated), state.done.assign(done)]
    with tf.control_dependencies(ops):
      return {"token": tf.identity(token), "text": tf.identity(text),
              "done": tf.identity(done), "num_tokens": tf.identity(generated)}

  spec = input_specs.batch_vector
  archive.add_endpoint("engine_init", init,
                       input_signature=[spec("slot", tf.int32)])
  archive.add_endpoint("engine_prefill", prefill, input_signature=[
      spec("prompt", tf.string), spec("slot", tf.int32),
      spec("max_new_tokens", tf.int32), spec("temperature", tf.float32),
      spec("top_k", tf.int32), spec("top_p", tf.float32),
      spec("seed", tf.int64)])
  archive.add_endpoint("engine_step", step, input_signature=[
      spec("active", tf.bool), spec("steps", tf.int32)])

"""Streams a generation from our GenerationService and prints it as it comes.

  python -m serving.stream_client --server=localhost:8500 --model=shakespeare \
      --max_new_tokens=200 --temperature=0.8 --seed=1 "ROMEO:"

`stream(channel, model, prompt, **settings)` is the small pure function to
copy: it yields (text piece, tokens so far, finish reason) tuples.
"""

import sys

import grpc
from absl import app, flags

from serving import generation_service

flags.DEFINE_string("server", "localhost:8500", "host:port of the gRPC port.")
flags.DEFINE_string("model", "default", "Model name.")
flags.DEFINE_integer("max_new_tokens", 100, "Tokens to generate.")
flags.DEFINE_float("temperature", 0.0, "0 = greedy.")
flags.DEFINE_integer("top_k", 0, "0 = no limit.")
flags.DEFINE_float("top_p", 1.0, "1 = no limit.")
flags.DEFINE_integer("seed", 0, "The same seed gives the same text.")
flags.DEFINE_multi_string("stop", [], "A stop string (repeatable).")
flags.DEFINE_float("timeout", 300, "Deadline of the call in seconds.")
FLAGS = flags.FLAGS


def stream(channel, model, prompt, timeout=None, **settings):
  """Yields (text, num_tokens, finish_reason) for each streamed message."""
  request = generation_service.GenerateRequest(prompt=prompt, **settings)
  request.model_spec.name = model
  for message in generation_service.stub(channel)(request, timeout=timeout):
    yield message.text, message.num_tokens, message.finish_reason


def main(argv):
  prompt = " ".join(argv[1:])
  with grpc.insecure_channel(FLAGS.server) as channel:
    sys.stdout.write(prompt)
    finish = None
    for text, _, finish in stream(
        channel, FLAGS.model, prompt, timeout=FLAGS.timeout,
        max_new_tokens=FLAGS.max_new_tokens, temperature=FLAGS.temperature,
        top_k=FLAGS.top_k, top_p=FLAGS.top_p, seed=FLAGS.seed,
        stop=FLAGS.stop):
      sys.stdout.write(text)
      sys.stdout.flush()
    sys.stdout.write(f"\n[{finish}]\n")


if __name__ == "__main__":
  app.run(main)

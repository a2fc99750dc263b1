"""Caption decoding throughput with the key/value cache versus without it, same run.

  python benchmarks/decoding.py                          # base preset, beam 5, max length 20
  python benchmarks/decoding.py --preset tiny --images 16

Workload: a batch of images of [IMG] + --regions regions, random weights of the preset (fp32);
beam search with beam 5, length penalty 0.6, max length 20 and min length 19, so every run decodes
the full 20 steps whatever the weights prefer (EOS is free at the last step only).
  cached:   the image is encoded once (prefill); each step runs one token per beam against the cache;
  no cache: each step re-encodes image + the whole target prefix for every beam (the same search,
            tests/test_decode.py checks both give the same sequences and scores).
Reports the median seconds per batch over --repeats timed runs after one compile/warm-up run,
images/s, and the cached / uncached speed-up.
"""

import argparse

import jax
import numpy as np

from unimo_jax.decoding.search import DecodeSettings
from unimo_jax.decoding.generate import jitted_generate
from timing import median_seconds
from unimo_jax.model import Unimo
from unimo_jax.model.params import init_params
from unimo_jax.model.presets import model_config
from unimo_jax.data.synthetic.random_batch import random_regions


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="base")
  parser.add_argument("--images", type=int, default=4)
  parser.add_argument("--regions", type=int, default=100)
  parser.add_argument("--beam", type=int, default=5)
  parser.add_argument("--max-length", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()

  config = model_config(args.preset)
  model = Unimo(config)
  params = init_params(config, jax.random.key(0))
  source = random_regions(config, np.random.default_rng(0), batch=args.images,
                          regions=args.regions)
  settings = DecodeSettings(beam_size=args.beam, alpha=0.6, max_length=args.max_length,
                            min_length=args.max_length - 1)
  print(f"{args.preset} preset, {jax.devices()[0].platform} x{jax.device_count()}: "
        f"{args.images} images x {args.regions + 1} image slots, beam {args.beam}, "
        f"{args.max_length} tokens", flush=True)
  results = {}
  for name, use_cache in (("cached", True), ("no cache", False)):
    fn = jitted_generate(model, settings, bos_id=0, eos_id=2, pad_id=1, use_cache=use_cache)
    key = jax.random.key(0)
    seconds = median_seconds(lambda: fn(params, source, key)["sequences"], args.repeats)
    results[name] = seconds
    print(f"  {name:9s} {seconds:8.2f} s per batch  {args.images / seconds:8.3f} images/s",
          flush=True)
  print(f"  speed-up of the cache: {results['no cache'] / results['cached']:.1f}x")


if __name__ == "__main__":
  main()

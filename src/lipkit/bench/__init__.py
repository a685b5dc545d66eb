"""`lipkit bench`: lipkit against open_clip on the same architecture (compare, with open_clip
through lipkit.interop.gateway), single speed figures (speed_figures), memory and the largest batch that fits (memory,
step_memory, max_batch); archs names the architectures, steps builds each trainer's step, harness
times them."""

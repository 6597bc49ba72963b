"""The step runtime every pipeline shares: what a component does around its library call (`pipeline_io`), the
per-step commands (`step_commands`), `wsseg run` (`runner`) and `wsseg compile` (`compile_pipelines`), a run's
stored config (`run_config`), a step's clock (`step_clock`), random generator states (`random_states`), weights by
path, URI or URL (`weights`), and the I/O threads beside a step (`writer_pool`, `read_ahead`).
"""

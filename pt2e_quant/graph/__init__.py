"""Reading and rewriting exported FX graphs: arguments by schema name, aliasing and in-place
writes, higher-order-op bodies, graph copies, node metadata, conv + batch-norm pairs,
already quantized regions, and the pattern language rules and rewrites match with."""

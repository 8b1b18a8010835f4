"""L3P planning: world model as a graph of latent landmarks (Zhang, Yang, Stadie, ICML 2021).

Modules, in dependency order: `maze` (environments), `geodesic` (exact shortest paths), `dynamics` (the
world-model seam), `world_model` (the learned GNN dynamics), `replay` (hindsight replay), `agent`
(goal-conditioned DDPG, critic = step distance), `landmarks` (embedding, farthest-point sampling, graph
edges), `search` (soft Floyd-Warshall, subgoals), `mpc` (CEM on the model), `benchmark` and `report`
(success against shortest-path distance).
"""

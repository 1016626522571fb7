"""Agents: one readable module per algorithm, each exposing `Config`, `State` and `make_agent`.

`AGENTS` maps CLI names to modules (imported lazily by `rlkit.registry`).
"""

AGENTS: dict[str, tuple[str, str]] = {
    "ppo": ("agents.ppo", "PPO with clipped surrogate and GAE (Schulman et al. 2017)"),
    "dqn": ("agents.dqn", "double DQN with a target network and epsilon-greedy exploration"),
    "hyq": ("agents.dqn:HybridConfig", "Hy-Q: Q-learning on batches mixed from a dataset and "
            "online data (Song et al. 2023); needs --dataset"),
    "bc": ("agents.bc", "behaviour cloning from a dataset (offline; needs --dataset)"),
    "cql": ("agents.cql", "conservative Q-learning, discrete CQL(H) (Kumar et al. 2020; offline, "
            "needs --dataset)"),
    "iql": ("agents.iql", "implicit Q-learning, discrete (Kostrikov et al. 2022; offline, "
            "needs --dataset)"),
    "bcq": ("agents.bcq", "discrete batch-constrained Q-learning (Fujimoto et al. 2019; offline, "
            "needs --dataset)"),
    "dt": ("agents.dt", "decision transformer: return-conditioned sequence model (Chen et al. "
           "2021; offline, needs --dataset)"),
    "glow": ("agents.glow", "GLOW: optimism over a confidence set of clipped density-ratio "
             "residuals (Amortila et al. 2024); exact on locks and DeepSea, or neural"),
    "hyglow": ("agents.glow:HybridConfig", "HyGLOW: H2O with the clipped density-ratio minimax "
               "learner, offline + online data (Amortila et al. 2024); needs --dataset"),
}

# Language-model agents: trained on text by the preference driver (rlkit.loops.preference),
# with `python -m rlkit.train sft|reward-model|dpo --task TASK` (rlkit.train_preference).
PREFERENCE_AGENTS: dict[str, tuple[str, str]] = {
    "sft": ("agents.sft", "supervised fine-tuning of a language model on demonstrations "
            "(completion tokens only)"),
    "reward-model": ("agents.reward_model", "Bradley-Terry reward model on preference pairs"),
    "dpo": ("agents.dpo", "Direct Preference Optimisation (Rafailov et al. 2023; not Discovered "
            "Policy Optimisation), sigmoid or IPO loss"),
    "hypo": ("agents.hypo", "HyPO: DPO on offline pairs plus lambda times the reverse KL of "
             "fresh samples, RLOO gradient (Song et al. 2024)"),
    "iterative-dpo": ("agents.iterative_dpo", "online iterative DPO: sample K completions, "
                      "label best vs worst, DPO, T times (Dong et al. 2024)"),
}

# Verifiable policy identification in linear MDPs: not gradient agents (no init/act/update
# contract), run by `rlkit.loops.ftpedel` through `python -m rlkit.train pedel|ftpedel`.
IDENTIFICATION_AGENTS: dict[str, tuple[str, str]] = {
    "pedel": ("agents.ftpedel", "PEDEL: verifiable epsilon-optimal policy identification in "
              "linear MDPs by online experiment design (Wagenmaker & Jamieson 2022)"),
    "ftpedel": ("agents.ftpedel:FineTuneConfig", "FTPedel: PEDEL with an offline dataset's "
                "covariance in the design (Wagenmaker & Pacchiano 2023); needs --dataset"),
}

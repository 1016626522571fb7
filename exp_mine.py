import time, sys
import jax, jax.numpy as jnp, envs
env = envs.make_env(sys.argv[1]); p = env.default_params
closed = sys.argv[2] == 'closed'
def episode(key, params):
    reset_key, action_key, step_key = jax.random.split(key, 3)
    actions = jax.random.randint(action_key, (16,), 0, 2, jnp.int32)
    step_keys = jax.random.split(step_key, 16)
    obs, state = env.reset(reset_key, params)
    def body(c, inp):
        state, ended = c
        t, a, key = inp
        obs, state, r, te, tr, info = env.step(key, state, a, params)
        ended = jnp.where((ended < 0) & (te | tr), t, ended)
        return (state, ended), None
    (_, ended), _ = jax.lax.scan(body, (state, jnp.int32(-1)), (jnp.arange(16), actions, step_keys))
    return ended
k = jax.random.key(0)
jax.jit(lambda x: x + 1).lower(1.0).compile()
t=time.process_time()
if closed: jax.jit(lambda k: episode(k, p)).lower(k).compile()
else: jax.jit(episode).lower(k, p).compile()
print(sys.argv[1:], round(time.process_time()-t,3))

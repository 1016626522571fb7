import time, jax, jax.numpy as jnp
t=time.time()
import envs
from envs import checker
print('import', time.time()-t)
for n in ['chain','riverswim']:
    t=time.time(); env = envs.make_env(n); print(n,'make', time.time()-t)
    p=env.default_params; k=jax.random.key(0)
    t=time.time(); o,s=env.reset(k,p); print('eager reset', time.time()-t)
    t=time.time(); out=env.step(k,s,jnp.int32(0),p); print('eager step', time.time()-t)
    t=time.time(); out=jax.jit(env.step)(k,s,jnp.int32(0),p); print('jit step', time.time()-t)
    t=time.time(); r=jax.vmap(env.reset, in_axes=(0,None))(jax.random.split(k,3),p); print('vmap reset', time.time()-t)
    t=time.time(); st=checker._rollout(env,p,k,8); print('rollout', time.time()-t)
    t=time.time(); checker.check_env(env); print('check', time.time()-t)

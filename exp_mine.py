import time, sys
import jax, jax.numpy as jnp
S = int(sys.argv[2])
P = jnp.ones((S, 2, S)) / S
k = jax.random.key(0)
jax.jit(lambda x: x + 1).lower(1.0).compile()
variants = {
 'cat': lambda k, P, i: jax.random.categorical(k, jnp.log(P[i, 0])),
 'gumbel': lambda k, P, i: jax.random.gumbel(k, (S,)) + P[i,0],
 'argmax': lambda k, P, i: jnp.argmax(P[i, 0]),
 'unif': lambda k, P, i: jax.random.uniform(k, (S,)) + P[i,0],
 'search': lambda k, P, i: jnp.sum(jnp.cumsum(P[i,0]) <= jax.random.uniform(k) ),
}
f = variants[sys.argv[1]]
t=time.process_time(); jax.jit(f).lower(k, P, 0).compile(); print(sys.argv[1:], round(time.process_time()-t,3))

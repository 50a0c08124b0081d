"""The SATORI pipeline's library. Importing it pins the CPU's numerics first (satori.core.cpu_numerics), before any
module of it loads torch or numpy: the same inputs give the same bits on every x86-64 machine."""

from satori.core import cpu_numerics

cpu_numerics.pin()

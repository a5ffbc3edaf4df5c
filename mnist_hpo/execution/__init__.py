"""How fits run: the fit plan, the executors (loky, Ray, fused) and the fit store they fill."""

"""The bounded global map and the Sim(3) bookkeeping of memory segments."""

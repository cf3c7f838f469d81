"""Process management: the prefork master and its children, threaded mode, and the OS chores.

The master (master.py) is the one place that forks, and executes what the pool's rules
(pool.py) decide; a child (child.py) waits for connections and hands each to the FastCGI
layer, set up like a threaded worker (worker.py). Around them: the shared listener and how
idle workers wait on it, signals at every moment of a process's life (signals.py), the
master-child channel, scoreboard and status query, graceful reload, privileges, pid file
and daemonizing, systemd, process titles.
"""

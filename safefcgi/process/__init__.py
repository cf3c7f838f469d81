"""Process management: the prefork master and its children, threaded mode, and the OS chores.

The master (master.py) is the one place that forks; a child (child.py) waits for
connections and hands each to the FastCGI layer. Around them: the shared listener and how
idle workers wait on it, the master-child channel and scoreboard, graceful reload,
privileges, pid file and daemonizing, systemd, process titles.
"""

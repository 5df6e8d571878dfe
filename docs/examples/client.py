#!/usr/bin/env python3
"""A terminal client for ptchat, standard library only.

    python3 docs/examples/client.py HOST PORT [--name NAME] [--password PASSWORD]

It does what `nc HOST PORT` does, plus three things nc cannot:

- Lines from the server are printed as they arrive, while you type: a reader thread
  prints them, so messages from others never wait for you to press Enter.
- It walks you through signing in: it answers the name prompt with --name and the
  password prompt with --password, or asks you (the password without echo when you are
  at a terminal). A wrong password is asked for again.
- It leaves cleanly: on `~:q!:` it waits for the server's goodbye and the close; on
  Ctrl-C or the end of input it signs out first; when the server closes, it says so.

Exit status: 0 after signing out, 1 if the server closed the connection first (a wrong
password three times, a sign-in timeout, ...), 2 for bad arguments or no connection.
"""

import argparse
import getpass
import queue
import socket
import sys
import threading

QUIT = "~:q!:"
# How long to wait for the server's goodbye and close after sending QUIT.
GOODBYE_WAIT_S = 5.0

# The server's prompts (docs/PROTOCOL.md, "Signing in").
NAME_PROMPTS = ("* Welcome to ptchat. Enter your name",)
NAME_RETRY_ENDINGS = ("Enter your name:",)
NAME_RETRY_STARTS = ("! Invalid name", "! The server could not save")
PASSWORD_ENDINGS = ("is a new account. Choose a password:",)
PASSWORD_STARTS = ("* Password for ",)
SIGNED_IN_START = "* Welcome, "


def classify(line):
    """What a server line asks of us: 'name', 'password', 'signed-in' or None."""
    if line.startswith(NAME_PROMPTS) or line.startswith(NAME_RETRY_STARTS):
        return "name"
    if line.startswith("! ") and line.endswith(NAME_RETRY_ENDINGS):
        return "name"
    if line.startswith(PASSWORD_STARTS) or line.endswith(PASSWORD_ENDINGS):
        return "password"
    if line.startswith("! ") and line.endswith("Try again:"):
        return "password"  # a wrong, empty or too long password
    if line.startswith(SIGNED_IN_START):
        return "signed-in"
    return None


# Set by the reader thread before it prints the welcome: whoever has seen that line
# (you, pressing Ctrl-C right after it) can count on the main thread knowing it too.
SIGNED_IN = threading.Event()


def read_server(sock, events):
    """The reader thread: print every line, tell the main thread about prompts and the
    end of the connection. It never reads the keyboard, so it never blocks on you."""
    # newline="\n": a server line ends with \n only; errors="replace": a broken byte
    # must not kill the thread.
    incoming = sock.makefile("r", encoding="utf-8", errors="replace", newline="\n")
    try:
        for line in incoming:
            line = line.rstrip("\n")
            kind = classify(line)
            if kind == "signed-in":
                SIGNED_IN.set()
            print(line, flush=True)
            if kind:
                events.put((kind, line))
    except OSError:
        pass  # the connection was reset; treated like a close
    events.put(("closed", None))


def read_keyboard(events):
    """The keyboard thread (started after sign-in): every line typed becomes an event."""
    for line in sys.stdin:
        events.put(("typed", line.rstrip("\r\n")))
    events.put(("end-of-input", None))


def ask(prompt, secret):
    """Ask the person at the keyboard. Returns None at the end of input."""
    try:
        if secret and sys.stdin.isatty():
            return getpass.getpass(prompt)
        if sys.stdin.isatty():
            return input(prompt)
        # Input from a pipe or file: one line, no prompt, no echo to fake.
        line = sys.stdin.readline()
        return line.rstrip("\r\n") if line else None
    except EOFError:
        return None


def send(sock, line):
    """Send one line; False if the connection is gone."""
    try:
        sock.sendall((line + "\n").encode("utf-8"))
        return True
    except OSError:
        return False


def sign_in(sock, events, name, password):
    """Answer the prompts until signed in. Returns True when signed in, False if the
    server closed or the input ended first. --name and --password are used once each;
    if the server asks again (a wrong password, a taken name), the person is asked."""
    while True:
        kind, _line = events.get()
        if kind == "closed":
            return False
        if kind == "signed-in":
            return True
        if kind == "name":
            if name is not None:
                answer, name = name, None
            else:
                answer = ask("Name: ", secret=False)
        else:
            if password is not None:
                answer, password = password, None
            else:
                answer = ask("Password: ", secret=True)
        if answer is None or not send(sock, answer):
            return False


def leave(sock, events):
    """Sign out: send QUIT and wait for the server to close (it says goodbye first)."""
    if send(sock, QUIT):
        wait_for_close(events, GOODBYE_WAIT_S)
    sock.close()


def wait_for_close(events, seconds):
    try:
        while True:
            kind, _ = events.get(timeout=seconds)
            if kind == "closed":
                return
    except queue.Empty:
        pass  # no close in time: close our side anyway


def chat(sock, events):
    """Signed in: send what is typed, until QUIT, the end of input, or the server's
    close. Returns the exit status."""
    threading.Thread(target=read_keyboard, args=(events,), daemon=True).start()
    while True:
        # A timeout keeps the wait interruptible by Ctrl-C on every platform.
        try:
            kind, line = events.get(timeout=0.5)
        except queue.Empty:
            continue
        if kind == "closed":
            print("* The server closed the connection.", file=sys.stderr, flush=True)
            return 1
        if kind == "end-of-input":
            leave(sock, events)
            return 0
        if kind == "typed":
            if line.strip() == QUIT:
                leave(sock, events)
                return 0
            if not send(sock, line):
                return 1


def main():
    parser = argparse.ArgumentParser(description="Chat on a ptchat server.")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--name", help="answer the name prompt with NAME")
    parser.add_argument(
        "--password",
        help="answer the password prompt with PASSWORD (visible in the process list; "
        "leave it out to be asked)",
    )
    args = parser.parse_args()

    try:
        sock = socket.create_connection((args.host, args.port), timeout=10)
    except OSError as e:
        print(f"! Cannot connect to {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
    sock.settimeout(None)  # from now on the reader thread waits as long as it takes

    events = queue.Queue()
    threading.Thread(target=read_server, args=(sock, events), daemon=True).start()
    try:
        if not sign_in(sock, events, args.name, args.password):
            sock.close()
            print("* Not signed in; the connection is closed.", file=sys.stderr, flush=True)
            return 1
        return chat(sock, events)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        if SIGNED_IN.is_set():
            # Sign out properly rather than just dropping the connection.
            leave(sock, events)
        else:
            # Before sign-in, QUIT would be taken for a name: just hang up.
            sock.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""A Flask service with fasttrace's endpoints mounted at /debug/fasttrace (WSGI)."""

import time

import fasttrace.http
from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

app = Flask(__name__)


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


@app.route("/")
def home():
    return str(fib(18))


@app.route("/slow")
def slow():
    time.sleep(0.01)
    return "slow"


app.wsgi_app = DispatcherMiddleware(app.wsgi_app,  # type: ignore[method-assign]
                                    {"/debug/fasttrace": fasttrace.http.wsgi_app()})

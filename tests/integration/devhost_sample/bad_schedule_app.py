"""A Functions app with an invalid timer schedule: the dev host must refuse to start, naming the function."""

import azure.functions as func

app = func.FunctionApp()


@app.timer_trigger(schedule="0 */5 * * *", arg_name="timer")
def five_field_schedule(timer: func.TimerRequest) -> None:
    """Five fields: a Unix cron expression, not NCRONTAB (which has a leading seconds field)."""

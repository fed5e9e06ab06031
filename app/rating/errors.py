"""What the rating flow refuses. Each error carries its HTTP status and a stable `code`; one
exception handler (app/web/errors.py) answers it as JSON on the evaluator API, as a page on the
evaluator pages and as text on the media route. A refused request stores nothing."""

from __future__ import annotations


class RatingError(Exception):
    """A request the rating flow refuses; `status_code` and `code` say how to answer it."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class StudyNotOpenError(RatingError):
    status_code = 403
    code = "study_not_open"


class StudyClosedError(RatingError):
    status_code = 409
    code = "study_closed"


class EnrollmentError(RatingError):
    status_code = 403
    code = "invite_required"


class InviteUsedError(RatingError):
    """A personal invite, or a participant id, already bound to someone else."""

    status_code = 409
    code = "invite_used"


class NotAnEvaluatorError(RatingError):
    status_code = 401
    code = "not_joined"


class TrialNotFoundError(RatingError):
    status_code = 404
    code = "trial_not_found"


class VoteValidationError(RatingError):
    status_code = 422
    code = "invalid_votes"


class VoteConflictError(RatingError):
    status_code = 409
    code = "already_answered"


class NotCurrentError(RatingError):
    status_code = 409
    code = "not_current"


class TooEarlyError(RatingError):
    status_code = 409
    code = "too_early"


class TimingError(RatingError):
    status_code = 422
    code = "invalid_timing"


class UnknownLinkError(RatingError):
    status_code = 404
    code = "unknown_link"

    def __init__(self) -> None:
        super().__init__(
            "This link does not lead to a study. Please check that you copied all of it."
        )


class CrossSiteError(RatingError):
    status_code = 403
    code = "cross_site"

    def __init__(self) -> None:
        super().__init__(
            "This request came from another website, so it was not accepted. Please open your "
            "study link yourself and press Start there."
        )


class WatchError(RatingError):
    status_code = 422
    code = "invalid_watch"

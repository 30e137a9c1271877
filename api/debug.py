"""Development only: keep the JSON error shape for API clients while DEBUG is on.

With DEBUG on, Django answers an unknown URL with its HTML technical page (handler404 is
not used), and its own views answer a wrong method with an empty HTML 405. settings.py
appends this middleware only when DEBUG is on, so production pays nothing for it.
"""

from django.http import JsonResponse

from api.exceptions import error_body

_ERRORS = {
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "This method is not allowed here."),
}


class DebugJsonErrorsMiddleware:
    """Turn Django's HTML 404/405 into the API's JSON error unless the client asked for HTML.

    A browser (its Accept header names text/html) still gets the technical 404 page,
    with the URL patterns tried; curl, Postman and generated clients get JSON.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code not in _ERRORS:
            return response
        if not response.get("Content-Type", "").startswith("text/html"):
            return response  # already JSON (DRF views, the project's handlers)
        if "text/html" in request.headers.get("Accept", ""):
            return response
        code, message = _ERRORS[response.status_code]
        json_response = JsonResponse(error_body(code, message), status=response.status_code)
        if response.has_header("Allow"):
            json_response["Allow"] = response["Allow"]
        return json_response

"""What several views share: who is asking, a page of results, query parameters."""

from rest_framework.response import Response

from api.pagination import PageNumberPagination


def is_admin(request) -> bool:
    return getattr(request.user, "is_admin", False)


def page_response(request, view, queryset, serializer_class) -> Response:
    paginator = PageNumberPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


def query_params(serializer_class, request) -> dict:
    query = serializer_class(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data

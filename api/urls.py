from django.urls import path

from api import views

# The hot endpoints first: the resolver tries patterns in order, and a flash sale is
# mostly purchases, polls and event reads.
urlpatterns = [
    path(
        "events/<int:event_id>/purchase/", views.PurchaseCreateApi.as_view(), name="event-purchase"
    ),
    path("orders/<int:order_id>/", views.OrderDetailApi.as_view(), name="order-detail"),
    path("events/<int:event_id>/", views.EventDetailApi.as_view(), name="event-detail"),
    path(
        "events/<int:event_id>/waiting-room/me/",
        views.WaitingRoomEntryApi.as_view(),
        name="waiting-room-entry",
    ),
    path(
        "events/<int:event_id>/waiting-room/",
        views.WaitingRoomApi.as_view(),
        name="waiting-room",
    ),
    path(
        "events/<int:event_id>/waiting-room/join/",
        views.WaitingRoomJoinApi.as_view(),
        name="waiting-room-join",
    ),
    path(
        "events/<int:event_id>/waitlist/me/",
        views.WaitlistEntryApi.as_view(),
        name="waitlist-entry",
    ),
    path("events/<int:event_id>/waitlist/", views.WaitlistApi.as_view(), name="waitlist"),
    path(
        "events/<int:event_id>/waitlist/join/",
        views.WaitlistJoinApi.as_view(),
        name="waitlist-join",
    ),
    path("register/", views.RegisterApi.as_view(), name="register"),
    path("login/", views.LoginApi.as_view(), name="login"),
    path("token/refresh/", views.TokenRefreshApi.as_view(), name="token-refresh"),
    path("logout/", views.LogoutApi.as_view(), name="logout"),
    path("events/", views.EventListCreateApi.as_view(), name="event-list"),
    path("events/top/", views.TopEventsApi.as_view(), name="event-top"),
    path("orders/", views.OrderListApi.as_view(), name="order-list"),
    path("orders/<int:order_id>/cancel/", views.OrderCancelApi.as_view(), name="order-cancel"),
    path("ops/queues/", views.OpsQueuesApi.as_view(), name="ops-queues"),
    path("health/", views.HealthApi.as_view(), name="health"),
    path("ready/", views.ReadyApi.as_view(), name="ready"),
    path("buyer/", views.buyer_page_urls),
]

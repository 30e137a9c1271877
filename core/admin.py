"""Django admin for users, events and orders."""

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.db import transaction

from core.exceptions import ApplicationError
from core.models import Event, Order, Ticket, User
from core.services.events import event_create, event_delete, event_update
from core.services.users import user_delete, user_tokens_revoke


class RevokingPasswordChangeForm(AdminPasswordChangeForm):
    """A password set by an Admin voids every token issued until then."""

    def save(self, commit=True):
        with transaction.atomic():
            user = super().save(commit=commit)
            if commit:
                user_tokens_revoke(user_id=user.pk)
        return user


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    """Every change that must end the user's sessions revokes in its own transaction."""

    list_display = ["username", "role", "is_active", "date_joined"]
    list_filter = ["role", "is_active"]
    fieldsets = BaseUserAdmin.fieldsets + (("Role", {"fields": ["role"]}),)
    change_password_form = RevokingPasswordChangeForm

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            # Access tokens carry the role and are checked without a database read.
            if change and {"role", "is_active", "password"} & set(form.changed_data):
                user_tokens_revoke(user_id=obj.pk)

    def delete_model(self, request, obj):
        user_delete(user_id=obj.pk)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for user_id in list(queryset.values_list("pk", flat=True)):
                user_delete(user_id=user_id)


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    """Edits go through the event services, so the Redis gate follows every change."""

    list_display = ["name", "date", "total_tickets", "tickets_sold"]
    search_fields = ["name"]
    readonly_fields = ["tickets_sold", "created_at", "updated_at"]

    def save_model(self, request, obj, form, change):
        if not change:
            created = event_create(**form.cleaned_data)
            obj.pk, obj.id = created.pk, created.pk
            return
        changed = {field: form.cleaned_data[field] for field in form.changed_data}
        try:
            event_update(event_id=obj.pk, data=changed)
        except ApplicationError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)

    def delete_model(self, request, obj):
        try:
            event_delete(event_id=obj.pk)
        except ApplicationError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)

    def has_delete_permission(self, request, obj=None):
        # Bulk deletion would bypass the service's checks; delete one event at a time.
        return obj is not None and super().has_delete_permission(request, obj)


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "event", "quantity", "status", "created_at"]
    list_filter = ["status"]
    readonly_fields = [f.name for f in Order._meta.fields]


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "event", "quantity", "purchase_date"]
    readonly_fields = [f.name for f in Ticket._meta.fields]

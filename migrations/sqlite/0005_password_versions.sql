-- A partner's password version: one more with every password change. A session is
-- stored (indexed in partner_sessions) only while the version its login verified is
-- still the partner's, so a login that checked the old password just before a change
-- cannot store a session just after it.
alter table users add column password_version integer not null default 1;
